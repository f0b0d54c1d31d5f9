//! Plain TCP: the listener, and [`Peer::connect`].

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpStream, ToSocketAddrs};

use super::{ConnectError, Connecting, ConnectionInfo, Listener, LocalAddr};
use crate::{Config, Handlers, Peer};

/// A TCP listener for a [`Server`](crate::Server).
///
/// Accepted sockets get `TCP_NODELAY`: the connection's writer batches
/// frames on its own.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::from_tokio(tokio::net::TcpListener::bind(addr).await?)
    }

    /// Accepts on a listener bound elsewhere.
    pub fn from_tokio(inner: tokio::net::TcpListener) -> io::Result<Self> {
        let local_addr = inner.local_addr()?;
        Ok(Self { inner, local_addr })
    }
}

impl Listener for TcpListener {
    type Conn = TcpConnecting;

    async fn accept(&mut self) -> io::Result<TcpConnecting> {
        let (stream, remote) = self.inner.accept().await?;
        Ok(TcpConnecting {
            stream,
            info: ConnectionInfo::new(LocalAddr::Tcp(self.local_addr), Some(remote)),
        })
    }

    fn local_addr(&self) -> LocalAddr {
        LocalAddr::Tcp(self.local_addr)
    }
}

/// An accepted TCP connection (see [`Connecting`]).
#[derive(Debug)]
pub struct TcpConnecting {
    stream: TcpStream,
    info: ConnectionInfo,
}

impl Connecting for TcpConnecting {
    type Io = TcpStream;

    fn info(&self) -> ConnectionInfo {
        self.info.clone()
    }

    async fn establish(self, _config: &Config) -> io::Result<TcpStream> {
        // Not fatal: only latency suffers without it.
        if let Err(e) = self.stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok(self.stream)
    }
}

/// Opens a TCP connection to `addr` within `limit`, with `TCP_NODELAY`:
/// the byte stream [`Peer::connect`] runs gotalk over, for callers that
/// want to wrap it first (then [`Peer::handshake`]).
pub async fn open_tcp(
    addr: impl ToSocketAddrs,
    limit: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
        .map_err(ConnectError::Io)?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}

impl Peer {
    /// Connects over TCP (with `TCP_NODELAY`: the writer batches on its own)
    /// and runs the handshake. Connecting and the handshake each get
    /// [`Config::handshake_timeout`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), gotalk_peer::Error> {
    /// use gotalk_peer::{Config, Handlers, Peer};
    /// let peer = Peer::connect("127.0.0.1:1234", Handlers::new(), Config::default()).await?;
    /// let greeting: serde_json::Value =
    ///     peer.request_json("greet", &serde_json::json!({"name": "Rasmus"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        addr: impl ToSocketAddrs,
        handlers: Handlers,
        config: Config,
    ) -> Result<Peer, ConnectError> {
        let stream = open_tcp(addr, config.handshake_timeout).await?;
        let remote = stream.peer_addr().ok().map(|a| a.to_string());
        Ok(Self::handshake_with_addr(stream, handlers, config, remote, |_| {}).await?)
    }
}
