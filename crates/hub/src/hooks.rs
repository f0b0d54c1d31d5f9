//! [`Hooks`]: the application's say in a connection's life.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use gotalk_peer::{CloseReason, ConnectionInfo};

use crate::{
    Hub, HubError,
    auth::{Access, Identity, Permissions},
    broker::ClientInfo,
};

/// A hook's refusal; the client gets the error result `denied: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(String);

impl Denied {
    /// A refusal with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a subscription ended (see [`Hooks::on_leave`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// The client unsubscribed.
    Unsubscribed,
    /// The server ended it ([`Hub::unsubscribe_client`](crate::Hub::unsubscribe_client)).
    Server,
    /// A refreshed token no longer grants read access to the channel.
    Revoked,
    /// The connection's identity expired.
    Expired,
    /// The connection closed.
    Disconnected,
}

/// The connection a hook is called for.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub(crate) hub: Hub,
    pub(crate) info: ClientInfo,
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) connection: Option<Arc<ConnectionInfo>>,
}

impl ClientContext {
    /// The client's id and user (empty for anonymous connections).
    pub fn info(&self) -> &ClientInfo {
        &self.info
    }

    /// The hub, to act on the client from a hook: join it to its own
    /// channel from [`Hooks::on_connect`] with
    /// [`Hub::subscribe_client`], say.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The client's id, unique across the cluster.
    pub fn client(&self) -> &str {
        &self.info.client
    }

    /// The user, or `""` for anonymous connections.
    pub fn user(&self) -> &str {
        &self.info.user
    }

    /// The verified identity, for authenticated connections.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// What the server knew of the connection when it opened (transport,
    /// address, WebSocket upgrade request), when it came through
    /// [`Hub::attach`](crate::Hub::attach).
    pub fn connection(&self) -> Option<&ConnectionInfo> {
        self.connection.as_deref()
    }
}

/// Lifecycle hooks and policy: every method has a default that allows
/// everything and does nothing; implement the ones you need.
///
/// Hooks run in the handler of the request they concern, so a slow hook
/// delays that request only. Permissions ([`Identity::permissions`], or the
/// hub's anonymous permissions) are checked before the hooks are asked: a
/// hook can refuse more, never allow more. Server-side calls
/// ([`Hub::publish`](crate::Hub::publish),
/// [`Hub::subscribe_client`](crate::Hub::subscribe_client)) are not put
/// through the hooks.
///
/// ```
/// use bytes::Bytes;
/// use futures::future::{BoxFuture, FutureExt};
/// use gotalk_hub::{ClientContext, Denied, Hooks};
///
/// /// Everyone gets their own channel; rooms are for their members;
/// /// messages are stamped by the server.
/// struct Rooms;
///
/// impl Hooks for Rooms {
///     fn on_connect<'a>(&'a self, client: &'a ClientContext) -> BoxFuture<'a, Result<(), Denied>> {
///         async move {
///             if !client.user().is_empty() {
///                 let own = format!("user:{}", client.user());
///                 client.hub().subscribe_client(client.client(), &own).await
///                     .map_err(|e| Denied::new(e.to_string()))?;
///             }
///             Ok(())
///         }.boxed()
///     }
///
///     fn on_subscribe<'a>(&'a self, client: &'a ClientContext, channel: &'a str)
///         -> BoxFuture<'a, Result<(), Denied>> {
///         let ok = !channel.starts_with("private:") || channel == format!("private:{}", client.user());
///         async move { if ok { Ok(()) } else { Err(Denied::new("not your room")) } }.boxed()
///     }
///
///     fn on_publish<'a>(&'a self, client: &'a ClientContext, _channel: &'a str, data: Bytes)
///         -> BoxFuture<'a, Result<Bytes, Denied>> {
///         async move {
///             let text: serde_json::Value = serde_json::from_slice(&data).map_err(|_| Denied::new("not JSON"))?;
///             let stamped = serde_json::json!({"from": client.user(), "text": text});
///             Ok(Bytes::from(stamped.to_string()))
///         }.boxed()
///     }
/// }
/// ```
pub trait Hooks: Send + Sync + 'static {
    /// A connection's session is established: at once when it opened (no
    /// authentication required, or a token came with the WebSocket
    /// upgrade), else at its first successful `auth`. Refusing closes the
    /// connection; the request that was waiting gets `denied: <reason>`.
    fn on_connect<'a>(&'a self, client: &'a ClientContext) -> BoxFuture<'a, Result<(), Denied>> {
        let _ = client;
        futures::future::ready(Ok(())).boxed()
    }

    /// A connection closed (after its subscriptions and presence were
    /// removed). Called for every connection whose session was
    /// established.
    fn on_disconnect<'a>(
        &'a self,
        client: &'a ClientContext,
        reason: &'a CloseReason,
    ) -> BoxFuture<'a, ()> {
        let _ = (client, reason);
        futures::future::ready(()).boxed()
    }

    /// A client asks to subscribe to `channel` (it has read access).
    fn on_subscribe<'a>(
        &'a self,
        client: &'a ClientContext,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(), Denied>> {
        let _ = (client, channel);
        futures::future::ready(Ok(())).boxed()
    }

    /// A client publishes `data` (one JSON value) on `channel` (it has
    /// write access). Returns the data to publish: `data` itself, or a
    /// rewrite of it (which must be one JSON value too).
    fn on_publish<'a>(
        &'a self,
        client: &'a ClientContext,
        channel: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, Denied>> {
        let _ = (client, channel);
        futures::future::ready(Ok(data)).boxed()
    }

    /// A subscription of `client` to `channel` started (asked by the
    /// client, or made by the server).
    fn on_join<'a>(&'a self, client: &'a ClientContext, channel: &'a str) -> BoxFuture<'a, ()> {
        let _ = (client, channel);
        futures::future::ready(()).boxed()
    }

    /// A subscription of `client` to `channel` ended.
    fn on_leave<'a>(
        &'a self,
        client: &'a ClientContext,
        channel: &'a str,
        reason: LeaveReason,
    ) -> BoxFuture<'a, ()> {
        let _ = (client, channel, reason);
        futures::future::ready(()).boxed()
    }
}

/// Checks that `permissions` grant `level` on `channel`.
pub(crate) fn require(
    permissions: &Permissions,
    channel: &str,
    level: Access,
) -> Result<(), HubError> {
    if permissions.allows(channel, level) {
        return Ok(());
    }
    let name = [
        (Access::READ, "read"),
        (Access::WRITE, "write"),
        (Access::PRESENCE, "presence"),
    ]
    .into_iter()
    .find(|(a, _)| level.contains(*a) && !permissions.allows(channel, *a))
    .map_or("read", |(_, n)| n);
    Err(HubError::Forbidden {
        level: name,
        channel: channel.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_level_is_named() {
        let p = Permissions::none().allow("c", Access::READ);
        assert!(require(&p, "c", Access::READ).is_ok());
        let e = require(&p, "c", Access::READ.union(Access::PRESENCE)).unwrap_err();
        assert_eq!(e.to_string(), r#"forbidden: presence access to "c""#);
        let e = require(&p, "d", Access::WRITE).unwrap_err();
        assert_eq!(e.to_string(), r#"forbidden: write access to "d""#);
    }
}
