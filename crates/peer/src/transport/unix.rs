//! Unix domain sockets: the listener, and [`Peer::connect_unix`].

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::UnixStream;

use super::{ConnectError, Connecting, ConnectionInfo, Listener, LocalAddr};
use crate::{Config, Handlers, Peer};

/// A Unix domain socket listener for a [`Server`](crate::Server).
///
/// The socket file is removed when the server stops (or the listener is
/// dropped), so the path can be bound again.
#[derive(Debug)]
pub struct UnixListener {
    inner: Option<tokio::net::UnixListener>,
    path: PathBuf,
}

impl UnixListener {
    /// Binds a socket at `path` (which must not exist yet).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let inner = tokio::net::UnixListener::bind(&path)?;
        Ok(Self {
            inner: Some(inner),
            path,
        })
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        // Only a listener that bound the file removes it.
        if self.inner.take().is_some()
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot remove the socket file");
        }
    }
}

impl Listener for UnixListener {
    type Conn = UnixConnecting;

    async fn accept(&mut self) -> io::Result<UnixConnecting> {
        let listener = self.inner.as_ref().expect("bound until dropped");
        let (stream, _) = listener.accept().await?;
        Ok(UnixConnecting {
            stream,
            info: ConnectionInfo::new(self.local_addr(), None),
        })
    }

    fn local_addr(&self) -> LocalAddr {
        LocalAddr::Unix(self.path.clone())
    }
}

/// An accepted Unix socket connection (see [`Connecting`]).
#[derive(Debug)]
pub struct UnixConnecting {
    stream: UnixStream,
    info: ConnectionInfo,
}

impl Connecting for UnixConnecting {
    type Io = UnixStream;

    fn info(&self) -> ConnectionInfo {
        self.info.clone()
    }

    async fn establish(self, _config: &Config) -> io::Result<UnixStream> {
        Ok(self.stream)
    }
}

/// Connects to the Unix domain socket at `path` within `limit`: the byte
/// stream [`Peer::connect_unix`] runs gotalk over, for callers that want to
/// wrap it first (then [`Peer::handshake`]).
pub async fn open_unix(
    path: impl AsRef<Path>,
    limit: Duration,
) -> Result<UnixStream, ConnectError> {
    tokio::time::timeout(limit, UnixStream::connect(path))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
        .map_err(ConnectError::Io)
}

impl Peer {
    /// Connects to a Unix domain socket and runs the handshake. Connecting
    /// and the handshake each get [`Config::handshake_timeout`].
    pub async fn connect_unix(
        path: impl AsRef<Path>,
        handlers: Handlers,
        config: Config,
    ) -> Result<Peer, ConnectError> {
        let path = path.as_ref();
        let stream = open_unix(path, config.handshake_timeout).await?;
        let remote = Some(format!("unix:{}", path.display()));
        Ok(Self::handshake_with_addr(stream, handlers, config, remote, |_| {}).await?)
    }
}
