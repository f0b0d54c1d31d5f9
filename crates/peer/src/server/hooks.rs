//! The server's hooks, the same for every transport.

use std::{borrow::Cow, fmt, sync::Arc};

use crate::{BoxedIo, ConnectionInfo, Peer};

pub(crate) type OnConnect = Arc<dyn Fn(&ConnectionInfo) -> Result<(), Rejection> + Send + Sync>;
pub(crate) type OnOpen = Arc<dyn Fn(&Peer, &ConnectionInfo) + Send + Sync>;
pub(crate) type WrapIo = Arc<dyn Fn(BoxedIo, &ConnectionInfo) -> BoxedIo + Send + Sync>;

/// The hooks of one server.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_connect: Option<OnConnect>,
    pub(crate) on_open: Option<OnOpen>,
    pub(crate) wrap_io: Option<WrapIo>,
}

impl Hooks {
    /// Whether `info` may connect.
    pub(crate) fn admit(&self, info: &ConnectionInfo) -> Result<(), Rejection> {
        match &self.on_connect {
            Some(f) => f(info),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_open", &self.on_open.is_some())
            .field("wrap_io", &self.wrap_io.is_some())
            .finish()
    }
}

/// Why a server's [`on_connect`](crate::Server::on_connect) hook refused a
/// connection.
///
/// A WebSocket client gets the HTTP status (403 by default) with the reason
/// as the response body, before the upgrade; on TCP, TLS and Unix sockets
/// the connection is closed before any handshake (the client sees its
/// gotalk or TLS handshake fail), as there is no way to say why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    reason: Cow<'static, str>,
}

impl Rejection {
    /// Refused: `403 Forbidden` for WebSocket clients.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: 403,
            reason: reason.into(),
        }
    }

    /// Not authenticated: `401 Unauthorized` for WebSocket clients.
    pub fn unauthorized(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: 401,
            reason: reason.into(),
        }
    }

    /// Why the connection was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The HTTP status a WebSocket client gets.
    pub fn http_status(&self) -> u16 {
        self.status
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejection {}
