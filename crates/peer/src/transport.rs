//! Connecting over TCP and Unix domain sockets.

#[cfg(unix)]
use std::path::Path;

use tokio::net::{TcpStream, ToSocketAddrs};

use crate::{Config, Error, Handlers, HandshakeError, Peer};

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
    ) -> Result<Peer, Error> {
        let limit = config.handshake_timeout;
        let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Handshake(HandshakeError::Timeout(limit)))??;
        stream.set_nodelay(true)?;
        let remote = stream.peer_addr().ok().map(|a| a.to_string());
        Self::handshake_with_addr(stream, handlers, config, remote, |_| {}).await
    }

    /// Connects to a Unix domain socket and runs the handshake.
    #[cfg(unix)]
    pub async fn connect_unix(
        path: impl AsRef<Path>,
        handlers: Handlers,
        config: Config,
    ) -> Result<Peer, Error> {
        let path = path.as_ref();
        let limit = config.handshake_timeout;
        let stream = tokio::time::timeout(limit, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| Error::Handshake(HandshakeError::Timeout(limit)))??;
        let remote = Some(format!("unix:{}", path.display()));
        Self::handshake_with_addr(stream, handlers, config, remote, |_| {}).await
    }
}
