//! Address arguments (`host:port`, `unix:PATH`, `ws://…`), connecting and listening.
//!
//! Every command takes addresses through [`Address`]; adding a transport
//! (WebSocket, once `gotalk-peer`'s `websocket` feature is used here) is one
//! arm in [`connect`] and one in [`Listener::bind`].

use std::{fmt, io, path::PathBuf, str::FromStr, time::Duration};

use gotalk_peer::{Config, Error, Handlers, Peer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

use crate::trace::{Traced, Tracer};

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Address {
    /// `host:port` (or `tcp://host:port`).
    Tcp(String),
    /// `unix:PATH`: a Unix domain socket.
    Unix(PathBuf),
    /// `ws://…` or `wss://…`: gotalk over WebSocket.
    WebSocket(String),
}

impl FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/tmp/gotalk.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with("ws://") || s.starts_with("wss://") {
            return Ok(Self::WebSocket(s.to_owned()));
        }
        let hostport = s.strip_prefix("tcp://").unwrap_or(s);
        if let Some((scheme, _)) = hostport.split_once("://") {
            return Err(format!(
                "unknown address scheme {scheme:?}: use host:port, unix:PATH or ws://HOST/PATH"
            ));
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(hostport.to_owned()))
            }
            _ => Err(format!(
                "{s:?} is not an address: use host:port (127.0.0.1:1234), unix:PATH or ws://HOST/PATH"
            )),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => f.write_str(a),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::WebSocket(u) => f.write_str(u),
        }
    }
}

/// The error for WebSocket addresses while this build has no WebSocket support.
fn no_websocket(url: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{url}: this gotalk build has no WebSocket transport yet"),
    )
}

/// Connects and runs the handshake; with a tracer, every frame in and out
/// is reported to it.
pub(crate) async fn connect(
    addr: &Address,
    handlers: Handlers,
    config: Config,
    tracer: Option<Tracer>,
) -> Result<Peer, Error> {
    let Some(tracer) = tracer else {
        return match addr {
            Address::Tcp(a) => Peer::connect(a.as_str(), handlers, config).await,
            #[cfg(unix)]
            Address::Unix(p) => Peer::connect_unix(p, handlers, config).await,
            #[cfg(not(unix))]
            Address::Unix(_) => Err(Error::Io(io::ErrorKind::Unsupported.into())),
            Address::WebSocket(url) => Err(Error::Io(no_websocket(url))),
        };
    };
    let limit = config.handshake_timeout;
    match addr {
        Address::Tcp(a) => {
            let stream = connect_timeout(limit, TcpStream::connect(a.as_str())).await?;
            stream.set_nodelay(true)?;
            handshake_traced(stream, tracer, handlers, config).await
        }
        #[cfg(unix)]
        Address::Unix(p) => {
            let stream = connect_timeout(limit, tokio::net::UnixStream::connect(p)).await?;
            handshake_traced(stream, tracer, handlers, config).await
        }
        #[cfg(not(unix))]
        Address::Unix(_) => Err(Error::Io(io::ErrorKind::Unsupported.into())),
        Address::WebSocket(url) => Err(Error::Io(no_websocket(url))),
    }
}

async fn connect_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting took longer than {limit:?}"),
        ))),
    }
}

async fn handshake_traced<T>(
    io: T,
    tracer: Tracer,
    handlers: Handlers,
    config: Config,
) -> Result<Peer, Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let traced = Traced::new(io, tracer.connection());
    Peer::handshake(traced, handlers, config).await
}

/// A byte stream accepted by a [`Listener`].
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A bound listening socket.
pub(crate) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`.
    pub(crate) async fn bind(addr: &Address) -> io::Result<Self> {
        match addr {
            Address::Tcp(a) => Ok(Self::Tcp(TcpListener::bind(a.as_str()).await?)),
            #[cfg(unix)]
            Address::Unix(p) => Ok(Self::Unix(tokio::net::UnixListener::bind(p)?, p.clone())),
            #[cfg(not(unix))]
            Address::Unix(_) => Err(io::ErrorKind::Unsupported.into()),
            Address::WebSocket(url) => Err(no_websocket(url)),
        }
    }

    /// The address clients connect to, in the form [`Address`] parses.
    pub(crate) fn local_addr(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("?({e})"), |a| a.to_string()),
            #[cfg(unix)]
            Self::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Accepts one connection: the stream and a printable remote address.
    pub(crate) async fn accept(&self) -> io::Result<(Box<dyn Io>, String)> {
        match self {
            Self::Tcp(l) => {
                let (s, remote) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Box::new(s), remote.to_string()))
            }
            #[cfg(unix)]
            Self::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), format!("unix:{}", p.display())))
            }
        }
    }

    /// Removes the socket file of a Unix listener (after it is closed).
    pub(crate) fn cleanup(self) {
        match self {
            Self::Tcp(_) => {}
            #[cfg(unix)]
            Self::Unix(l, p) => {
                drop(l);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "127.0.0.1:1234".parse(),
            Ok(Address::Tcp("127.0.0.1:1234".into()))
        );
        assert_eq!(
            "tcp://localhost:80".parse(),
            Ok(Address::Tcp("localhost:80".into()))
        );
        assert_eq!("[::1]:9".parse(), Ok(Address::Tcp("[::1]:9".into())));
        assert_eq!(
            "unix:/tmp/g.sock".parse(),
            Ok(Address::Unix("/tmp/g.sock".into()))
        );
        assert_eq!(
            "ws://localhost:1234/gotalk/".parse(),
            Ok(Address::WebSocket("ws://localhost:1234/gotalk/".into()))
        );
        assert!("wss://example.invalid/".parse::<Address>().is_ok());
        for bad in [
            "localhost",
            "host:",
            ":80",
            "host:99999",
            "http://x:1",
            "unix:",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        assert_eq!(
            Address::Unix("/s".into()).to_string(),
            "unix:/s",
            "display round-trips"
        );
    }
}
