//! Transports: where connections come from and how clients open them.
//!
//! A [`Listener`] yields [`Connecting`] connections; the [`Server`](crate::Server)
//! runs every one of them the same way, whatever the transport:
//!
//! 1. [`Connecting::info`] says who is calling ([`ConnectionInfo`]), and the
//!    server's [`on_connect`](crate::Server::on_connect) hook admits or
//!    refuses the connection ([`Connecting::refuse`]) before any transport
//!    handshake (TLS, WebSocket upgrade) is spent on it;
//! 2. [`Connecting::establish`] runs that handshake and hands over the byte
//!    stream, which the server's [`wrap_io`](crate::Server::wrap_io) hook may
//!    wrap;
//! 3. the gotalk version handshake, the [`on_open`](crate::Server::on_open)
//!    hook, and the connection is served.
//!
//! Listeners of this crate: [`TcpListener`], [`UnixListener`] (Unix only),
//! `tls::TlsListener` (feature `tls`) and
//! `ws::WsListener` (feature `websocket`). Every
//! client `connect` fails with one error type, [`ConnectError`].

mod addr;
mod connect_error;
#[cfg(feature = "http")]
pub mod http;
mod info;
#[cfg(all(feature = "tls", feature = "websocket"))]
pub(crate) mod lazy_tls;
mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(unix)]
mod unix;
#[cfg(feature = "websocket")]
pub mod ws;

use std::{future::Future, io};

use tokio::io::{AsyncRead, AsyncWrite};

pub use addr::{LocalAddr, TransportKind};
pub use connect_error::ConnectError;
pub use info::ConnectionInfo;
#[cfg(feature = "websocket")]
pub use info::WebSocketInfo;
pub use tcp::{TcpConnecting, TcpListener, open_tcp};
#[cfg(unix)]
pub use unix::{UnixConnecting, UnixListener, open_unix};

use crate::Config;

/// A byte stream: anything that is both [`AsyncRead`] and [`AsyncWrite`].
///
/// Blanket-implemented, so that [`BoxedIo`] can name the pair as one trait
/// object.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite {}

impl<T: AsyncRead + AsyncWrite + ?Sized> AsyncReadWrite for T {}

/// A connection's gotalk byte stream as a trait object, as the `wrap_io`
/// hooks ([`Server::wrap_io`](crate::Server::wrap_io), and
/// `ws::WsClientConfig::wrap_io` for clients) take and return it.
pub type BoxedIo = Box<dyn AsyncReadWrite + Send + Unpin>;

/// A source of connections for a [`Server`](crate::Server).
///
/// Implemented by every transport of this crate; implement it to serve
/// gotalk over anything else that accepts byte streams.
pub trait Listener: Send + 'static {
    /// A connection accepted but not established yet.
    type Conn: Connecting;

    /// Waits for the next connection. An error is logged and retried after
    /// a short pause (running out of file descriptors and the like), so it
    /// should not be returned for good.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;

    /// Where clients connect.
    fn local_addr(&self) -> LocalAddr;

    /// Called once when the server stops accepting: release what the
    /// listener holds (a port, a socket file) before the server's
    /// [`shutdown`](crate::ServerHandle::shutdown) returns.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// A connection between accept and the gotalk handshake: its transport
/// handshake (TLS, WebSocket upgrade) has not run yet, so refusing it costs
/// next to nothing.
pub trait Connecting: Send + 'static {
    /// The established byte stream.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// What is known about the connection; the server numbers it (sets
    /// [`ConnectionInfo::id`]).
    fn info(&self) -> ConnectionInfo;

    /// Adjusts the connection's settings before it is established (the
    /// WebSocket listener applies what the client said it can handle).
    /// `config` is shared with the server's other connections: change it
    /// through [`Arc::make_mut`](std::sync::Arc::make_mut), and only when
    /// something differs, so that connections that change nothing share
    /// one copy.
    fn configure(&self, config: &mut std::sync::Arc<Config>) {
        let _ = config;
    }

    /// Runs the transport handshake (each transport bounds it with
    /// [`Config::handshake_timeout`]) and returns the byte stream.
    fn establish(self, config: &Config) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// Refuses the connection as early as the transport allows: a
    /// WebSocket upgrade request is answered with the rejection's HTTP
    /// status and reason; other transports close the socket.
    fn refuse(self, rejection: &crate::Rejection)
    where
        Self: Sized,
    {
        let _ = rejection;
    }
}
